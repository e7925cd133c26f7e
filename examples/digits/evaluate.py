"""Score model/model.joblib on data/test.npz and write metrics/metrics.json."""

import json
from pathlib import Path

import joblib
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

test = np.load("data/test.npz")
model = joblib.load("model/model.joblib")
predicted = model.predict(test["X"])
metrics = {
    "accuracy": round(float(accuracy_score(test["y"], predicted)), 4),
    "macro_f1": round(float(f1_score(test["y"], predicted, average="macro")), 4),
    "test_images": int(len(test["y"])),
}
Path("metrics").mkdir(exist_ok=True)
Path("metrics/metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
print(f"test accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")
