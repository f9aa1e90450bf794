// The method x image matrix (to come).
