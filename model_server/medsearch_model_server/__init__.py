"""KServe DenseNet121 embedding predictor."""
