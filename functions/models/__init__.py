"""Networks: the study CNN and cutting it (F / FR / FT), and its files."""
