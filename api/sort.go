package api

import "sort"

func sortByID(ms []map[string]any) {
	sort.Slice(ms, func(i, j int) bool { return ms[i]["id"].(string) < ms[j]["id"].(string) })
}
