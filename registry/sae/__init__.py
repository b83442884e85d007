"""The canonical module (`SAE`: every single-hook SAE and transcoder as one
torch.nn.Module), its argument checks, and `attach` for running one inside a model.

Submodules are imported directly (`saereg.sae.module`), so that importing `attach` does
not import torch before a model is given."""
