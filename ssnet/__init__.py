"""SS-Net reproduction pipeline: library code behind the Snakemake workflow."""

__version__ = "0.1.0"
