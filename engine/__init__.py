"""Framework core: config, registries, trainer loop, optimisation, evaluation, I/O."""
