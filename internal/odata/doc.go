// Package odata parses and evaluates the subset of OData v4 query options
// that the C2C API accepts on lists: $filter (eq, ne, gt, lt, ge, le, and, or,
// not, parentheses, contains(), startswith()), $orderby, $select, $top,
// $skip, $count/$inlinecount and $expand. Errors name the option and the
// position, so the API can answer 400 with something a person can fix.
//
// c2c-api parses to validate; the registry parses the same strings again to
// filter and sort in memory. It knows nothing about devices: callers evaluate
// expressions against their own records through Record.
package odata
