SELECT 'a;b' /* c; */ -- d;
; SELECT `x`