"""Make a small dataset in the Nerva libraries' .npz format from one that ships with scikit-learn.

The format is the one the libraries' ``data/prepare_data.py`` writes for MNIST and CIFAR-10 and
their ``create_npz_dataloaders`` reads: ``Xtrain`` and ``Xtest`` float32 rows scaled to [0, 1],
``Ttrain`` and ``Ttest`` integer class labels, in one compressed archive. So the libraries'
``examples/train_mnist_cli.sh`` runs on it without a download, with the first layer size set to
the data's width (digits: 64):

    python3 scripts/make_npz.py digits digits.npz
    nerva-consistency run --layers="ReLU;ReLU;Linear" --layer-sizes="64;1024;512;10" \\
        --layer-weights="XavierNormal;XavierNormal;XavierNormal" \\
        --optimizers="Momentum(0.9);Momentum(0.9);Momentum(0.9)" --batch-size=100 --epochs=5 \\
        --loss=SoftmaxCrossEntropy --learning-rate="Constant(0.01)" --load-dataset=digits.npz

The split is a seeded permutation of the rows (the test part first ``--test-fraction`` of it).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

DATASETS = ("digits", "iris", "wine", "breast_cancer")


def arrays(name: str, test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """Xtrain, Ttrain, Xtest, Ttest of scikit-learn's ``name``, features scaled to [0, 1]."""
    import sklearn.datasets

    data = getattr(sklearn.datasets, f"load_{name}")()
    X = np.asarray(data.data, dtype=np.float64)
    if name == "digits":
        X = X / 16.0  # pixels 0..16, as MNIST's 0..255 are divided by 255
    else:
        low, high = X.min(axis=0), X.max(axis=0)
        X = (X - low) / np.where(high > low, high - low, 1.0)
    labels = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    test, train = order[:n_test], order[n_test:]
    return {"Xtrain": X[train].astype(np.float32), "Ttrain": labels[train],
            "Xtest": X[test].astype(np.float32), "Ttest": labels[test]}


def make_npz(path: str, name: str = "digits", test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``name`` to ``path`` in the libraries' format; returns the arrays written."""
    out = arrays(name, test_fraction, seed)
    np.savez_compressed(path, **out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("output", help="the .npz file to write")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of the rows held out (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (default %(default)s)")
    args = p.parse_args(argv)
    if not 0 <= args.test_fraction < 1:
        p.error(f"--test-fraction {args.test_fraction} is not in [0, 1)")
    out = make_npz(args.output, args.dataset, args.test_fraction, args.seed)
    print(f"{args.output}: {len(out['Xtrain'])} training and {len(out['Xtest'])} test rows of "
          f"{out['Xtrain'].shape[1]} features, {int(out['Ttrain'].max()) + 1} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
