/* placeholder: module under construction */
typedef int upm_placeholder_kafka;
