"""Run an exported focal-detect model with onnxruntime: python predict_onnx.py model.onnx image.png"""

import sys

import numpy as np
import onnxruntime
from PIL import Image

session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"), dtype=np.float32) / 255.0
boxes, scores, labels, num = session.run(None, {"images": image.transpose(2, 0, 1)[None]})
n = int(num[0])  # image 0's detections are the first n rows, best first
boxes, scores, labels = boxes[0, :n], scores[0, :n], labels[0, :n]
for box, score, label in zip(boxes, scores, labels):
    print(f"class {label}  score {score:.3f}  box {np.round(box, 1).tolist()}")
