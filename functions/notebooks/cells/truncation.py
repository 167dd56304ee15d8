# %% [markdown]
# # {{folder}}: how many pretrained layers are enough
# Truncation (FT) keeps the pretrained layers before the cut, frozen, and removes the rest: the smallest network that still transfers.

# %%
{{parameters}}
