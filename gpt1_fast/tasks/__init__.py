"""The paper's fine-tuning tasks (Figure 1): readers, metrics, transforms, heads and their training."""
