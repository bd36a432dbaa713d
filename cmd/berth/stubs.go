package main

import "context"

func runUp(ctx context.Context, args []string) error    { return nil }
func runPool(ctx context.Context, args []string) error  { return nil }
func runBench(ctx context.Context, args []string) error { return nil }
