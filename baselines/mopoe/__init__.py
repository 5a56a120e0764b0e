"""MoPoE (Sutter et al. 2021): mixture over subsets of products of experts."""
