"""Distribution of new exams to reading terminals (SPEC 2): policy, assignment, pre-computation."""
