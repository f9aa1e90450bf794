"""Dataset-scope plugins: views of the whole folder (t-SNE map, nearest neighbours, top-activating examples)."""
