"""Pure values shared by every layer: levels, query keys, matching, instance records."""
