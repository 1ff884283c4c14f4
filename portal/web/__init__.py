"""The browser portal: one module per topic (accounts, datasets, jobs), each a thin layer over the services."""
