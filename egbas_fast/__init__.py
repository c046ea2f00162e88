"""egbas-fast: E-GBAS (Jeon, Jeong, Choi, AAAI 2020, arXiv 1912.05827) with a fast C++ core."""
__version__ = "0.1.0"
