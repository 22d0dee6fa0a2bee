"""Small structure files for tests and benchmarks of bad input."""

# Rock-salt Fe0.5Co0.5O: one site shared by two elements (a disordered
# structure that ``screen`` must refuse, not evaluate as CoO)
DISORDERED_CIF = """data_FeCoO
_cell_length_a 4.26
_cell_length_b 4.26
_cell_length_c 4.26
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Fe1 Fe 0 0 0 0.5
Co1 Co 0 0 0 0.5
O1 O 0.5 0.5 0.5 1.0
"""
