package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/flashgate/flashgate/challenge"
)

const solveUsage = `Usage:
  flashgate solve < puzzle.json          the answer of POST /api/v1/sales/{sale}/challenge
  flashgate solve CHALLENGE DIFFICULTY
Prints the X-Challenge-Solution for a proof-of-work puzzle (what the shop
page's worker does in the browser), for scripts and curl.
`

func solveCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var p challenge.Puzzle
	switch len(args) {
	case 0:
		if err := json.NewDecoder(io.LimitReader(stdin, 64<<10)).Decode(&p); err != nil {
			return fmt.Errorf("reading the puzzle from standard input: %v", err)
		}
		if p.Kind != "pow" {
			return fmt.Errorf("the puzzle is of kind %q; only pow puzzles can be solved here", p.Kind)
		}
	case 2:
		d, err := strconv.Atoi(args[1])
		if err != nil {
			return fmt.Errorf("difficulty %q: %v", args[1], err)
		}
		p.Challenge, p.Difficulty = args[0], d
	default:
		fmt.Fprint(stderr, solveUsage)
		return errUsage
	}
	if p.Difficulty < challenge.MinDifficulty || p.Difficulty > challenge.MaxDifficulty {
		return fmt.Errorf("difficulty %d outside %d..%d", p.Difficulty, challenge.MinDifficulty, challenge.MaxDifficulty)
	}
	s, err := challenge.Solve(ctx, p.Challenge, p.Difficulty)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, s)
	return nil
}

var stdinReader io.Reader = os.Stdin
