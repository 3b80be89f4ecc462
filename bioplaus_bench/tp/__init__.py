"""The target-propagation family's shared pieces: feedback paths, losses and targets."""
