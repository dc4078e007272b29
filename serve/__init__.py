"""HTTP serving of a packaged student (BentoML); arrives with the service issue."""
