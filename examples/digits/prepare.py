"""Split scikit-learn's bundled digits into train/test arrays under data/."""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--test-size", type=float, default=0.25)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X / 16.0, y, test_size=args.test_size, random_state=args.seed, stratify=y
)
Path("data").mkdir(exist_ok=True)
np.savez_compressed("data/train.npz", X=X_train, y=y_train)
np.savez_compressed("data/test.npz", X=X_test, y=y_test)
print(f"prepared {len(y_train)} training and {len(y_test)} test images")
