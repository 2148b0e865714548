/* placeholder until the module lands: fails so it cannot be mistaken for done */
#include <stdio.h>
int main(void) { fprintf(stderr, "test_httpd: not written yet\n"); return 1; }
