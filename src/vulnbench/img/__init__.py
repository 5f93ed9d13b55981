"""The dermoscopy arm (Du-Harpur et al. 2021): melanoma-vs-naevus image classifiers and the attacks that fool them."""
