# A clean-room R implementation of scType's scoring, written by vulnbench from specs/sc-classifiers.md §1.3–1.4
# (not scType's code). It has scType's signature, so the `backend = "r"` bridge can be tested where the GPL-3 file
# `sctype_score_.R` may not be shipped: vulnbench sources whichever file `r_source` names.
sctype_score <- function(scRNAseqData, scaled = TRUE, gs, gs2 = NULL, gene_names_to_uppercase = TRUE, ...) {
  k <- length(gs)
  counts <- table(unlist(gs))
  weight <- (k - as.numeric(counts)) / (k - 1)
  names(weight) <- names(counts)
  if (gene_names_to_uppercase) rownames(scRNAseqData) <- toupper(rownames(scRNAseqData))
  present <- function(genes) unique(rownames(scRNAseqData)[rownames(scRNAseqData) %in% genes])
  pos <- lapply(gs, present)
  neg <- if (is.null(gs2)) lapply(gs, function(g) character(0)) else lapply(gs2, present)
  z <- if (scaled) scRNAseqData else t(scale(t(scRNAseqData)))
  weighted <- intersect(rownames(z), names(weight))
  weighted <- weighted[weighted %in% unique(unlist(pos))]
  for (g in weighted) z[g, ] <- z[g, ] * weight[[g]]
  term <- function(genes, sign) {
    if (length(genes) == 0) return(rep(NaN, ncol(z)))
    sign * colSums(z[genes, , drop = FALSE]) / sqrt(length(genes))
  }
  es <- t(vapply(seq_along(pos), function(t) {
    second <- term(neg[[t]], -1)
    second[is.na(second)] <- 0
    term(pos[[t]], 1) + second
  }, numeric(ncol(z))))
  dimnames(es) <- list(names(gs), colnames(z))
  es[!apply(is.na(es), 1, all), , drop = FALSE]
}
