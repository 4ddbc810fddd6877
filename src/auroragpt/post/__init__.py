"""Post-training beyond the trainer's objectives: the iterative generate -> score -> DPO loop and demo tasks."""
