"""Networks: the registry of pretrained networks and their one Backbone, the study CNN and cutting it
(F / FR / FT), and their files."""
