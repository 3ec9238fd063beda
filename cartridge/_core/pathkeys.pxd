cpdef tuple file_key(object path)
cpdef object normal_key(object path)
