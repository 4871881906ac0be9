"""Analysis: learning regime, curvature, stability and spike statistics (pure functions -> tidy DataFrames)."""
