"""Learning-rate policies (protocol §7), as a function of the 0-based iteration ``t``."""

from __future__ import annotations


def learning_rate(t: int, training: dict) -> float:
    """lr used by iteration ``t``.

    step: lr * gamma ** (t // step) (reference 3D: the drop follows iteration 2500, 5000, ...);
    poly: lr * (1 - max(t - 1, 0) / T) ** power (SSL4MIS 2D scripts set the rate after the step that
    used it, from that step's 0-based count, so iterations 0 and 1 both use lr); constant: lr.
    """
    base = float(training["lr"])
    policy = training["lr_policy"]
    if policy == "constant":
        return base
    if policy == "step":
        return base * float(training["lr_gamma"]) ** (t // int(training["lr_step"]))
    if policy == "poly":
        return base * (1.0 - max(t - 1, 0) / int(training["iterations"])) ** float(training["poly_power"])
    raise ValueError(f"unknown training.lr_policy '{policy}' (step | constant | poly)")
