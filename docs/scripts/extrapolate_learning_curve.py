"""Extrapolate a reproduction run's validation errors to more steps.

Fits `error = a * steps**b` (a straight line in log-log) to the validation
pixel and Rand errors of the second half of a run's evaluated epochs, and
prints the fit and the steps at which each error would reach a target if
the power law held. An **extrapolation**, not a measurement: learning
curves flatten, so the step counts it prints are a lower bound at best.

Usage:

    python docs/scripts/extrapolate_learning_curve.py RUN/training_log.csv \\
        --rand-target 0.08 --pixel-target 0.07
"""

import argparse
import csv
import math
import sys

import numpy as np


def read(path):
    steps, pixel, rand = [], [], []
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            try:
                s = float(row["steps"])
                p = float(row["val_pixel_error"])
                r = float(row["val_rand_error"])
            except (KeyError, ValueError):
                continue
            if math.isfinite(p) and math.isfinite(r):
                steps.append(s)
                pixel.append(p)
                rand.append(r)
    return np.array(steps), np.array(pixel), np.array(rand)


def fit(steps, values):
    """`(a, b)` of `values = a * steps**b`, least squares in log-log."""
    b, log_a = np.polyfit(np.log(steps), np.log(values), 1)
    return math.exp(log_a), b


def steps_for(a, b, target):
    if b >= 0:
        return math.inf
    return (target / a) ** (1.0 / b)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--rand-target", type=float, default=0.08)
    parser.add_argument("--pixel-target", type=float, default=0.07)
    parser.add_argument(
        "--seconds-per-step",
        type=float,
        default=None,
        help="to print the wall time the step counts would take",
    )
    args = parser.parse_args(argv)
    steps, pixel, rand = read(args.csv)
    if len(steps) < 4:
        sys.exit("Need at least 4 evaluated epochs to fit.")
    half = steps >= np.median(steps)
    for name, values, target in (
        ("pixel error", pixel, args.pixel_target),
        ("Rand error", rand, args.rand_target),
    ):
        a, b = fit(steps[half], values[half])
        needed = steps_for(a, b, target)
        line = (
            f"{name}: fit {a:.3f} * steps^{b:.3f} over steps "
            f"{steps[half][0]:.0f}-{steps[half][-1]:.0f}; last "
            f"{values[-1]:.4f}; {target} at about {needed:,.0f} steps"
        )
        if args.seconds_per_step and math.isfinite(needed):
            line += f" ({needed * args.seconds_per_step / 3600:.0f} h)"
        print(line + " (extrapolation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
