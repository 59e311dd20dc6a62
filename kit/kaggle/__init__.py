"""What talks to Kaggle or runs there: the official client, the Kaggle commands, kernels built
(bundle) and pushed, watched and collected (remote), a code competition's release and its
inference. Nothing outside this package imports from it but the command line."""
