"""Making the plan: config/config.yaml checked and crossed into grid cells."""
