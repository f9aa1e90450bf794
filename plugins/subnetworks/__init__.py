"""Hidden subnetworks of random networks (Ramanujan et al. 2020): edge-popup and its baselines."""
