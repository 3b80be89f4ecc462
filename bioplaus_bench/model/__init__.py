"""What an algorithm sees: the contract, networks, tasks and the optimiser."""
