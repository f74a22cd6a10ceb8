"""actpat: which parameters of a language model does an input activate?

A library behind the Snakemake workflow of this repository; see README.md.
"""

__version__ = "0.1.0"
