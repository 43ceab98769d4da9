"""Using a trained operator outside the training code: export (ONNX, TorchScript, torch.export),
compression (quantised weights, distilled students) and an HTTP endpoint with a page. Nothing here imports
the training loop, except :mod:`.compress`, whose distillation is training."""
