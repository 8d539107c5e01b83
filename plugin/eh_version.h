#ifndef EH_VERSION_H
#define EH_VERSION_H
/* The one place the version is written: packaging reads it from here. */
#define EH_VERSION "0.1.0"
#endif
