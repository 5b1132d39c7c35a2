"""Knowledge distillation: losses and the training loops that use them."""
