# %% [markdown]
# # {{folder}}: where to cut a pretrained network
# Which pretrained conv layers should we reuse, and should the rest be kept (F) or re-initialised (FR)? Each cut point keeps the layers before it, frozen.

# %%
{{parameters}}
