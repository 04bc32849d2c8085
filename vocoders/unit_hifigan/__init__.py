"""Unit HiFi-GAN: a HiFi-GAN generator driven by discrete-unit embeddings (speech-resynthesis /
textlesslib layout), its discriminators, losses, training loop and batched inference.

Heavy modules (torch) are imported by the submodules, not here.
"""
