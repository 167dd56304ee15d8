"""Which pretrained model for a task: the model x task transferability matrix, recommenders
that predict it before any fine-tuning, and their evaluation."""
