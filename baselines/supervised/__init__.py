"""The supervised reference row of paper Table 1: image → attributes and image → mask by a direct net."""
