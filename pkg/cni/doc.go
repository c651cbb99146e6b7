// Package cni is knit's CNI spec core: the request a plugin serves, the plugin
// interfaces, error codes, result conversion between spec versions, delegation
// to other plugins (in-process for knit's own types, exec for the rest) and the
// main function shared by every plugin binary.
//
// It is built on github.com/containernetworking/cni, the spec library: skel
// validates the environment, types and types/100 carry results and errors.
package cni
