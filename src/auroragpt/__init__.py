"""AuroraGPT: train, evaluate and serve foundation models from a laptop to ten thousand GPU nodes.

Importing the package does no work: no environment reads, no torch or MPI initialisation.
"""

__version__ = "0.1.0"
