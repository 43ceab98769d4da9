"""Using a trained operator outside the training code: export (ONNX, TorchScript, torch.export),
compression (int8, distilled students) and an HTTP endpoint with a page. Nothing here imports
the training loop, except :mod:`.compress`, whose distillation is training."""
