"""Linear-probe accuracy: how linearly separable frozen features make the classes.

CLIP's protocol: multinomial logistic regression with an L2 penalty, fitted by L-BFGS
on one split's frozen features and scored on another's. Features are standardised with
the training split's statistics first, so one penalty suits any encoder's scale.
Torch's L-BFGS (not scikit-learn, an optional dependency here) and float64 make the fit
deterministic for given features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                            weight_decay: float = 1e-3, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (D, C), bias (C,)) minimising mean cross-entropy + weight_decay/2 * |W|^2;
    callable inside an evaluation's inference mode (the fit leaves it for itself)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(features.clone().double(), labels.clone().long(), num_classes, weight_decay, steps)


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, steps: int):
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          num_classes: int, weight_decay: float = 1e-3) -> float:
    """Accuracy on (test_x, test_y) of a logistic regression fitted on (train_x, train_y)."""
    mean, std = train_x.double().mean(dim=0), train_x.double().std(dim=0).clamp(min=1e-6)
    weight, bias = fit_logistic_regression((train_x - mean) / std, train_y, num_classes, weight_decay)
    predicted = (((test_x.double() - mean) / std) @ weight + bias).argmax(dim=1)
    return float((predicted == test_y.long()).double().mean())
