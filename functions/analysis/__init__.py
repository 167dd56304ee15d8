"""Reading results: summaries, statistics, figures, clustering and transferability."""
