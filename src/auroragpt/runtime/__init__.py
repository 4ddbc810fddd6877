"""Run anywhere: accelerator and backend detection, launcher environments, process-group set-up."""
