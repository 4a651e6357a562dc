#ifndef SIEVE_CYAML_SHIM_H
#define SIEVE_CYAML_SHIM_H
#include <yaml.h>
#endif
