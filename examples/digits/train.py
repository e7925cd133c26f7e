"""Fit an SVM on data/train.npz and save it to model/model.joblib."""

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.svm import SVC

parser = argparse.ArgumentParser()
parser.add_argument("--C", type=float, default=10.0)
parser.add_argument("--gamma", type=float, default=0.001)
args = parser.parse_args()

train = np.load("data/train.npz")
model = SVC(C=args.C, gamma=args.gamma).fit(train["X"], train["y"])
Path("model").mkdir(exist_ok=True)
joblib.dump(model, "model/model.joblib")
print(f"trained SVC(C={args.C}, gamma={args.gamma}): "
      f"train accuracy {model.score(train['X'], train['y']):.4f}")
