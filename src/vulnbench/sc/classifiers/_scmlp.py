"""scMLP: the paper's Keras network in torch (128 → 64 → softmax, dropout 0.5, Adam, 20 epochs, batch 32)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from vulnbench.sc.classifiers.base import PerCellClassifier, Perturbation

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: hidden activations per batch in the perturbed fast path (float32 → 64 MB)
HIDDEN_BATCH_ELEMENTS = 1 << 24


def _no_grad(method: Callable[..., Any]) -> Callable[..., Any]:
    """`torch.no_grad()` that imports torch only when called: every job imports the classifier registry, and most
    never touch scMLP, so a module-level `import torch` cost each of them ~2 s."""

    @functools.wraps(method)
    def without_gradients(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return method(*args, **kwargs)

    return without_gradients


class ScMLP(PerCellClassifier):
    name = "scmlp"
    capabilities = PerCellClassifier.capabilities | {"differentiable", "loss_gradient"}

    def __init__(self, hidden: Sequence[int] = (128, 64), dropout: float = 0.5, epochs: int = 20,
                 batch_size: int = 32, learning_rate: float = 1e-3, validation_split: float = 0.2,
                 standardize: bool = True, seed: int = 0, device: str = "cpu") -> None:
        """Keyword parameters, as a config sets them.

        Args:
            hidden: widths of the hidden ReLU layers
            dropout: dropout probability after each hidden layer
            epochs: training passes over the training cells
            batch_size: cells per Adam mini-batch
            learning_rate: Adam learning rate
            validation_split: fraction of training cells held out to log validation accuracy (no early stopping)
            standardize: z-score each gene with the training mean and sd before the network
            seed: seed of weight initialisation, shuffling and the validation split; defaults to the top-level seed
            device: torch device for training and scoring: cpu or e.g. cuda (the rule then requests a GPU)
        """
        self.hidden = tuple(hidden)
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.standardize = standardize
        self.seed = seed
        self.device = device

    def _build(self, n_in: int, n_out: int) -> nn.Sequential:
        from torch import nn

        layers: list[nn.Module] = []
        for width in self.hidden:
            layers += [nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(self.dropout)]
            n_in = width
        layers.append(nn.Linear(n_in, n_out))
        return nn.Sequential(*layers)

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.mean_ = matrix.mean(axis=0) if self.standardize else np.zeros(matrix.shape[1], np.float32)
        scale = matrix.std(axis=0) if self.standardize else np.ones(matrix.shape[1], np.float32)
        self.scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        x = torch.from_numpy((matrix - self.mean_) / self.scale_).float()
        target = torch.from_numpy(np.searchsorted(self.classes_, y)).long()
        order = rng.permutation(len(y))
        n_val = round(self.validation_split * len(y))
        val, train = order[:n_val], order[n_val:]
        self.network_ = self._build(matrix.shape[1], len(self.classes_)).to(self.device)
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(self.seed)
        self.history_: list[dict[str, float]] = []
        for epoch in tqdm(range(self.epochs), desc="scMLP epochs", leave=False):
            self.network_.train()
            total = 0.0
            for batch in torch.randperm(len(train), generator=generator).split(self.batch_size):
                idx = torch.from_numpy(train)[batch]
                optimiser.zero_grad()
                loss = loss_fn(self.network_(x[idx].to(self.device)), target[idx].to(self.device))
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            record = {"epoch": epoch + 1, "loss": total / max(1, len(train))}
            if n_val:
                record["val_accuracy"] = float((self._logits(x[val]).argmax(1).cpu() == target[val]).float().mean())
            self.history_.append(record)
        log.info("scMLP trained: %s", self.history_[-1] if self.history_ else {})
        self.network_.eval()

    @_no_grad
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self.network_.eval()
        return self.network_(x.to(self.device))

    @_no_grad
    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(((matrix - self.mean_) / self.scale_).astype(np.float32))
        return torch.softmax(self._logits(x), dim=1).cpu().numpy().astype(np.float64)

    @_no_grad
    def predict_proba_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        """Perturb the first layer's pre-activations instead of the input.

        The first layer is linear, so modifying genes S changes cell c's pre-activation by
        (v_S − x_cS) · W[:, S]: one small product per candidate instead of a full pass over all genes.
        """
        import torch

        self.network_.eval()
        first, rest = self.network_[0], self.network_[1:]
        weight = (first.weight / torch.from_numpy(self.scale_).to(first.weight.device)).T  # genes × hidden
        bias = first.bias - torch.from_numpy(self.mean_).to(weight.device) @ weight
        x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(weight.device)
        base = x @ weight + bias  # cells × hidden
        n_cells, width = base.shape
        out = np.empty((len(perturbations), n_cells, len(self.classes_)), dtype=np.float64)
        per_batch = max(1, HIDDEN_BATCH_ELEMENTS // (n_cells * width))
        for start in tqdm(range(0, len(perturbations), per_batch), leave=False, desc="scMLP batches",
                          disable=len(perturbations) <= per_batch):
            chunk = perturbations[start : start + per_batch]
            hidden = base.repeat(len(chunk), 1, 1)
            singles = [i for i, (cols, _) in enumerate(chunk) if len(cols) == 1]
            if singles:
                cols = torch.as_tensor(np.array([chunk[i][0][0] for i in singles]), device=weight.device)
                values = np.stack([np.broadcast_to(np.reshape(chunk[i][1], (-1, 1)) if np.ndim(chunk[i][1]) == 2
                                                   else chunk[i][1], (n_cells, 1))[:, 0] for i in singles])
                values = torch.as_tensor(values, dtype=torch.float32, device=weight.device)  # singles × cells
                shift = values - x[:, cols].T
                hidden[singles] += shift[:, :, None] * weight[cols][:, None, :]
            for i, (cols, values) in enumerate(chunk):
                if len(cols) > 1:
                    cols_t = torch.as_tensor(cols, device=weight.device)
                    shift = torch.as_tensor(values, dtype=torch.float32, device=weight.device) - x[:, cols_t]
                    hidden[i] += shift @ weight[cols_t]
            probs = torch.softmax(rest(hidden.reshape(-1, width)), dim=1)
            out[start : start + len(chunk)] = probs.reshape(len(chunk), n_cells, -1).cpu().numpy()
        return out

    def input_gradient(self, block: np.ndarray, up: int, down: int) -> np.ndarray:
        """Gradient of p(up) − p(down) with respect to every input value, per cell (true-gradient CGD)."""
        import torch

        self.network_.eval()
        x = torch.from_numpy(((block - self.mean_) / self.scale_).astype(np.float32)).to(self.device)
        x.requires_grad_(True)
        probs = torch.softmax(self.network_(x), dim=1)
        (probs[:, up] - probs[:, down]).sum().backward()
        return (x.grad / torch.from_numpy(self.scale_).to(self.device)).cpu().numpy().astype(np.float64)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if "network_" in state:
            state["network_"] = state["network_"].to("cpu")
        return state
