"""The encoders, critics and DeepInfoMax objective, and how they are trained."""
