package main

import (
	"strconv"
	"strings"
)

// plural writes a count with its noun in the right number: "1 hold",
// "2 holds", "1 entry", "3 entries". The noun's last word takes the plural.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + pluralOf(noun)
}

// pluralOf is the English plural of noun's last word, for the nouns lethe
// prints.
func pluralOf(noun string) string {
	switch {
	case strings.HasSuffix(noun, "s"), strings.HasSuffix(noun, "x"),
		strings.HasSuffix(noun, "ch"), strings.HasSuffix(noun, "sh"):
		return noun + "es"
	case strings.HasSuffix(noun, "y") && len(noun) > 1 && !strings.ContainsRune("aeiou", rune(noun[len(noun)-2])):
		return noun[:len(noun)-1] + "ies"
	}
	return noun + "s"
}
